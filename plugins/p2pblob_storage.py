"""
The storage plugins that come with p2pblob.  Each backend's code is
imported only when the plugin is used, so its options are declared here.
"""

from p2pblob.storage.options import Option
from p2pblob.storage.plugin import StoragePlugin

local = StoragePlugin(
    "local",
    "p2pblob.storage.local:make_backend",
    (Option("root", "str", help="The directory that holds the files."),),
    blocking=True,
)

memory = StoragePlugin("memory", "p2pblob.testing:make_memory_backend")

s3 = StoragePlugin(
    "s3",
    "p2pblob.storage.s3:make_backend",
    (
        Option("bucket", "str", help="The bucket that holds the files."),
        Option(
            "endpoint_url",
            "str",
            "",
            help="The URL of an S3-compatible service (MinIO, Ceph...); empty for AWS.",
        ),
        Option("region", "str", "us-east-1", help="The region of the bucket."),
        Option(
            "access_key",
            "str",
            "",
            help="The access key id; empty to use boto3's own credentials (environment, files).",
        ),
        Option("secret_key", "str", "", help="The secret access key, with access_key."),
        Option(
            "prefix",
            "str",
            "",
            help="What the name of every object starts with, such as 'blobs/'.",
        ),
        Option("create_bucket", "bool", False, help="Make the bucket if it is missing."),
        Option(
            "addressing_style",
            "enum",
            "auto",
            help="How the bucket is named in URLs: in the path or in the host name.",
            values=("auto", "path", "virtual"),
        ),
    ),
    blocking=True,
)

sftp = StoragePlugin(
    "sftp",
    "p2pblob.storage.sftp:make_backend",
    (
        Option("host", "str", help="The SSH server's host name or address."),
        Option("port", "int", 22, help="The SSH server's port.", minimum=1),
        Option("username", "str", help="The user to log in as."),
        Option("password", "str", "", help="The user's password; empty to use private_key only."),
        Option(
            "private_key",
            "str",
            "",
            help="The file of a private key (without passphrase) to log in with.",
        ),
        Option(
            "known_hosts",
            "str",
            "",
            help="An OpenSSH known_hosts file that lists the server's key (or give host_key).",
        ),
        Option(
            "host_key",
            "str",
            "",
            help="The server's public key ('ssh-ed25519 AAAA...') or its fingerprint "
            "('SHA256:...'), if known_hosts does not list it.",
        ),
        Option(
            "root",
            "str",
            ".",
            help="The directory on the server that holds the files; a relative one is "
            "relative to the user's home.",
        ),
        Option(
            "timeout",
            "float",
            30.0,
            help="Seconds to wait for a connection, or for the server to answer, before "
            "trying again.",
            minimum=1,
        ),
    ),
)
