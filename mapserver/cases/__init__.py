"""The case workflow: intake, filing, dispatch, handling, checking, closing."""
