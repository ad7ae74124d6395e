"""Paper experiments behind ``hessnorm reproduce NAME``; never imported by the library."""
