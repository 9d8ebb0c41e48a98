"""The Evaluate tab: NIAH, retrieval, held-out samples and perplexity, with figures (`tab.build`)."""
