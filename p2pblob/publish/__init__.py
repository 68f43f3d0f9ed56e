"""
Publishing without being asked each time: L{watch.FolderWatcher} publishes
the files of a watched folder as they appear and change.
"""
