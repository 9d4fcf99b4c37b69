DROP TABLE user_holds;
