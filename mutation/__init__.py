"""`make mutation`: mutation testing of src/user_hasher against the fast tests (see __main__.py)."""
