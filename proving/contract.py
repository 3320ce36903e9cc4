"""The brief's example, which every proof checks the service against: user id TESTUSERID
with salt TESTSALT hashes to 9f1021612c2a810d26472a66e4064f6608d52fd3."""

CONTRACT_USER_ID = "TESTUSERID"
CONTRACT_SALT = "TESTSALT"
CONTRACT_HASH = "9f1021612c2a810d26472a66e4064f6608d52fd3"
CONTRACT_TARGET = f"/user_hash?user_id={CONTRACT_USER_ID}"
# The answer's body: the hash as a JSON string.
CONTRACT_BODY = f'"{CONTRACT_HASH}"'.encode()
