"""Connector libraries: SQL, MySQL, file formats, filesystems and HDFS, CDC batches.

Readers and writers are built from these; the engine (``sync``) never imports them.
"""
