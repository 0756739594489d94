"""What runs show and publish: console tables, the HTML report, trackers, the model card, the Hub upload."""
