"""Live media that passes through the server without becoming events: the screen-share frame
relay (newest frame for a slow viewer)."""
