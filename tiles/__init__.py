"""CityGrid tiles package."""
