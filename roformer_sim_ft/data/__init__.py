"""Data: the readers (pure Python), their line reader, the batches and the bundled sample data."""
