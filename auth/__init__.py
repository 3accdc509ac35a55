"""CityGrid auth package."""
