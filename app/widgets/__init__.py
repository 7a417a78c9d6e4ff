"""Small widgets and helpers shared by the app's panels."""
