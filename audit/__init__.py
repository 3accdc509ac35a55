"""CityGrid audit package."""
