"""Rewrite the example submissions in this folder: python starting_kit/example_submissions/regenerate.py"""

from pathlib import Path

from e2lmc.kit import write_example_submissions

if __name__ == "__main__":
    for path in write_example_submissions(Path(__file__).resolve().parent):
        print(path)
