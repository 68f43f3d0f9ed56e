import re
from pathlib import Path

from setuptools import find_packages, setup

here = Path(__file__).parent
version = re.search(
    r'__version__ = "([^"]+)"', (here / "p2pblob" / "_version.py").read_text()
).group(1)

setup(
    name="p2pblob",
    version=version,
    description="A peer-to-peer blob exchange node on Twisted, wire-compatible with LBRY",
    long_description=(here / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.10",
    # plugins/ holds Twisted dropins: installed as twisted/plugins/ so that
    # `twistd p2pblob` finds the service maker.
    packages=find_packages(include=["p2pblob", "p2pblob.*"]) + ["twisted.plugins"],
    package_dir={"twisted.plugins": "plugins"},
    package_data={"p2pblob": ["py.typed", "http/dashboard/*"]},
    install_requires=[
        "twisted>=24.7.0",
        "zope.interface>=6.0",
        "cryptography>=42.0",
        "click>=8.1",
        "klein>=23.5.0",
        "prometheus-client>=0.14",
        "treq>=23.11.0",
    ],
    extras_require={
        # storage backends: blobs and mirrors in S3-compatible object stores
        # (boto3, run in threads) and on SFTP servers (twisted.conch)
        "s3": ["boto3>=1.34"],
        "sftp": ["twisted[conch]>=24.7.0"],
        # UPnP port mapping on the LAN's router
        "upnp": ["miniupnpc>=2.2"],
        # an onion service and peers reached through Tor
        "tor": ["txtorcon>=23.5"],
        "test": [
            "hypothesis>=6.100",
            "psutil>=5.9",
            "selenium>=4.15",
            "boto3>=1.34",
            "moto[server]>=5.0",
            "twisted[conch]>=24.7.0",
            # an independent S3 client for the S3 gateway's tests
            "awscli>=1.36",
            # the UPnP client, tested against a real miniupnpd
            "miniupnpc>=2.2",
            # the Tor provider, tested against a private Tor network
            "txtorcon>=23.5",
        ],
    },
    entry_points={"console_scripts": ["p2pblob = p2pblob.cli.main:main"]},
    classifiers=[
        "Framework :: Twisted",
        "Programming Language :: Python :: 3",
        "Topic :: System :: Networking",
    ],
)
