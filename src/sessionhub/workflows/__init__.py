"""Kind workflows that take more than one hub call: remote-access commands (Grace) and
workspaces (JamBot: the one-active rule on create, recovery, chat, clean-up)."""
