"""Untrusted and on-disk input: image decoding, the caption-table reader, data discovery."""
