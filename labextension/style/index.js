import './base.css';
import 'swagger-ui-dist/swagger-ui.css';
