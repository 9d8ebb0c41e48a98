"""The Generate tab: synthetic samples from an endpoint or procedurally (`tab.build`)."""
