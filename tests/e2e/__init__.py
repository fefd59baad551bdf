"""End-to-end tests of the web pages in a real headless Chromium (Selenium), against a
real localserve daemon, with a real webhook receiver on loopback."""
