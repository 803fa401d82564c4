"""Frame sources: OpenCV VideoCapture (device, URL, file), image folders and simulated cameras."""
