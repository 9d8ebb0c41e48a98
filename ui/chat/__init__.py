"""The Chat tab: one model or two side by side over a long document (`tab.build`)."""
