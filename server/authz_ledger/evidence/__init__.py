"""Evidence packs: a selection of decisions with the proofs that let an auditor check them offline."""
