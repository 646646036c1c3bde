"""What tests/ and bench/ both drive the bots with: stand-ins of Slack's and Discord's APIs, as
strict as the services (slack_standin, discord_standin), and scripted answers (doubles). It imports
neither of them (the contract is in pyproject.toml)."""
