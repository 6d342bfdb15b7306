"""Assets, built by factories from the provider registry."""
