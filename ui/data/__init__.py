"""The Data tab: open, inspect, edit, measure and mix training sets (`tab.build`)."""
