"""Files and folders: atomic writes (atomic) and the output folders our runs own (folders)."""
