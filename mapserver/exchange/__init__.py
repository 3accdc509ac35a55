"""City–district exchange (市区数据交换): signed bundles between two CityGrid installs."""
