"""funnelsim."""
