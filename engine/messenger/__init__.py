"""Meta's formats and the Graph API client: webhook JSON to typed events, signatures, outbound message JSON,
the Send API and User Profile calls with retries and error classification."""
