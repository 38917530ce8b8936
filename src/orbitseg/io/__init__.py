"""Reading and writing scans and label volumes with their geometry.

``io`` knows files and geometry only: no preprocessing, no model.
"""
