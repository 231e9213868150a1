"""Session kinds: one file of policy each, registered in ``registry``."""
