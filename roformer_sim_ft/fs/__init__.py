"""Files and folders: atomic writes (atomic), the output folders our runs own (folders) and content digests (digest)."""
