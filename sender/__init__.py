"""The program that runs in sender pods."""
