"""Witnessing: sends each new checkpoint with a consistency proof to the configured C2SP tlog-witness endpoints and
keeps their cosignatures."""
