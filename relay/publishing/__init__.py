"""Publishing: one adapter per platform behind one interface (relay.publishing.adapters)."""
