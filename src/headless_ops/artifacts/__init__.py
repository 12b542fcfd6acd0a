"""What operations carry to devices and bring back, shared by every protocol helper:
firmware images, configuration templates and configuration backups."""
