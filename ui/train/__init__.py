"""The Train tab: configure, launch, watch, merge and push runs (`tab.build`)."""
