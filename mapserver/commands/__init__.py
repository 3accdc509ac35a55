"""The sub-commands of `citygrid`, one module per area."""
