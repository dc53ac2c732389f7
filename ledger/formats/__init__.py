"""Formats and cryptography: the bytes that are signed, hashed and proven.

Pure functions over bytes, depending on the standard library and
``cryptography`` only: a third party can audit this layer on its own.
"""
