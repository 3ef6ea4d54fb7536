"""`python -m automl_nn` runs the CLI."""

from automl_nn.cli import main

main()
