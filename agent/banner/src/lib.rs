//! On-screen consent banner rendering and presenters.
