"""The web layer's shared pieces: how errors become HTTP answers."""
