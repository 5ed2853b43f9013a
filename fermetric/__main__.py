"""`python -m fermetric ...` (what `torchrun -m fermetric train-classifier ...` runs)."""
from fermetric.cli import main

if __name__ == "__main__":
    main()
