"""The durable store of answers and their 👍/👎 votes, and its schema migrations."""
