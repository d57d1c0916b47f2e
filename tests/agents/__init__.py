"""Small agent programs written for the tests, run as `agent` steps (each is a script on an official SDK)."""
