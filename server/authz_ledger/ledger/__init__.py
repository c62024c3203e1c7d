"""The write side and its storage: the LMDB layout, the single writer thread (group commit, hash chain, tree,
checkpoints), offline verification, and opening a data directory for serving."""
