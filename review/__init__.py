"""The review page: see bad answers, correct them, and watch quality per model."""
