"""Cryptography: the AEAD primitive, key derivation, the v3 stream format, the Go legacy format."""
