"""
Publishing without being asked each time: L{watch.FolderWatcher} publishes
the files of a watched folder as they appear and change; and publishing
over HTTP: L{manifest.ManifestPublisher} publishes the files a manifest
declares, uploaded under their names (AccessGrid's flow).
"""
