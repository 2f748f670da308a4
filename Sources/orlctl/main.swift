print("orlctl")
