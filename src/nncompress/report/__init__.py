"""Tables and figures about a compression run."""
