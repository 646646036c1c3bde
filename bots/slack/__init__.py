"""teambot on Slack: Bolt listeners (app), feedback, hand-offs, the streamed reply and its blocks."""
