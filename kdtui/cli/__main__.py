"""`python -m kdtui.cli`: the same command line as the `kdtui` script."""
from kdtui.cli import main

main()
