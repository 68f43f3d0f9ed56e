from p2pblob.cli.main import main

main()
