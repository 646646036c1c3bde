"""teambot on Discord: discord.py events and commands (app), feedback, hand-offs and the reply."""
